"""The trial's scoring batches texts by length (less padding) and still returns each row's own probabilities,
in the order given, as if each text were scored alone."""

from __future__ import annotations

import numpy as np
import pytest

from bias_ray.train.trainable import class_probabilities, predict
from tests.test_mitigations import make

TEXTS = ["no", "a much longer sentence about the people who live next door to us", "short one",
         "the second longest text of these, though not by very much at all", "mid length text here", "x y z"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("student_kind", ["seq_cls", "causal_lm"])
def test_rows_come_back_in_order_whatever_the_batching(tmp_path, tiny_model, data_root, student_kind):
    _, _, student, model = make(tmp_path, tiny_model, data_root, "none", student_kind=student_kind)
    alone = np.concatenate([class_probabilities(model, student, [t]) for t in TEXTS])
    batched = class_probabilities(model, student, TEXTS, batch_size=3)  # batches mix lengths unless sorted
    assert batched.shape == (len(TEXTS), 2)
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    assert not np.allclose(alone, alone[0])  # the rows differ, so an order mix-up would show
    np.testing.assert_array_equal(predict(model, student, TEXTS, batch_size=3), alone.argmax(-1))
    assert class_probabilities(model, student, []).shape == (0, 2)

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


@pytest.mark.timeout(120)
def test_held_out_scores_come_from_the_same_probabilities_as_the_labels(tmp_path, tiny_model, data_root):
    import pandas as pd
    from sklearn.metrics import f1_score, log_loss, roc_auc_score

    from bias_ray.train.trainable import evaluate_rows

    _, _, student, model = make(tmp_path, tiny_model, data_root, "none")
    test = pd.DataFrame({"text": TEXTS, "label": [0, 1, 0, 1, 1, 0], "group": ["a", "b", "a", "b", "a", "b"]})
    p = class_probabilities(model, student, TEXTS)
    out = evaluate_rows(model, student, test, ["a", "b"])
    assert out["roc_auc"] == pytest.approx(roc_auc_score(test["label"], p[:, 1]))
    assert out["log_loss"] == pytest.approx(log_loss(test["label"], p, labels=[0, 1]), rel=1e-6)
    assert out["macro_f1"] == pytest.approx(f1_score(test["label"], p.argmax(-1), average="macro", zero_division=0))
    assert "bias_type/roc_auc" not in out  # the scores are the scheduler's signal, not a group gap

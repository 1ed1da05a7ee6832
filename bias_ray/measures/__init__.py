"""Measures: the instruments the stages share, below them (it imports none of them).

:mod:`~bias_ray.measures.metrics` (classification and group-fairness metrics, each metric's
direction and bounds), :mod:`~bias_ray.measures.encoder` (the MiniLM sentence encoder),
:mod:`~bias_ray.measures.classifier` (the stance classifier on its embeddings) and
:mod:`~bias_ray.measures.lm` (the causal-LM scorer). Generation measures what it wrote with the
classifier, training and the downstream tasks score with the metrics and the LM scorer, the
analysis compares embeddings and stances, the report reads the metrics' directions and bounds.
The modules are imported one by one, so importing a light one does not load torch.
"""

"""Training: LoRA fine-tuning trials (peft) with a pluggable mitigation, run by Ray Tune."""

"""Generation: seed data + prompt templates per bias type -> augmented data (Ray Data)."""

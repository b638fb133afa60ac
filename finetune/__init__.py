"""Fine-tuning pretrained polyfid models to small sets, and their evaluation."""

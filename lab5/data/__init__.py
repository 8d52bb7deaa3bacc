"""Data: the BAIR lab layout and its full check, the ``Dataset`` and its uint8 cache, the TFRecord converter."""

"""Data: the BAIR lab layout, its uint8 cache, the TFRecord converter and the embedded simulator."""

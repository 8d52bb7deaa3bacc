"""Models: VGG64 / DCGAN64 encoders and decoders, the LSTM predictor and Gaussian LSTMs, the CVAE."""

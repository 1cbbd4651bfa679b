"""Learning from recorded episodes: bag -> ALOHA HDF5 conversion, training, evaluation."""

"""RAG models in TensorFlow/Keras: `TFRagModel`, `TFRagSequenceForGeneration`, `TFRagTokenForGeneration`."""

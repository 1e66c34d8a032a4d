"""RAG models in PyTorch: `RagModel`, `RagSequenceForGeneration`, `RagTokenForGeneration`."""

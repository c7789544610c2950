"""Text files to batches: readers, the prepared corpus, tokenizers, batching, a run's data, corpora."""

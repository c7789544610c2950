"""The seq2seq model and its parts: recurrences (LSTM, GRU), attention, padding-skipping segments."""

"""Audio corpora and the labelled tasks probes are trained on.

`tasks` knows audio and labels and nothing about models: it builds the synthetic corpus, loads local and
Hugging Face corpora, and defines tasks with their split policies and control tasks.
"""

"""Option values shared by the extraction code and the CLI, importable without torch."""

POOLINGS = ("mean", "meanstd", "max")
DTYPES = ("float32", "float16")
PRECISIONS = ("32", "16-mixed", "bf16-mixed")

"""Names the CLI offers (dialects, channels, presets), importable without numpy/scipy so it starts fast.

tests/tasks/test_catalog.py checks they match the implementations.
"""

# The English accents espeak-ng ships: dialect label -> espeak-ng language name.
DIALECTS: dict[str, str] = {
    "en-US": "en-us",
    "en-US-nyc": "en-us-nyc",
    "en-GB": "en",
    "en-GB-x-rp": "en-gb-x-rp",
    "en-GB-scotland": "en-gb-scotland",
    "en-GB-x-gbclan": "en-gb-x-gbclan",
    "en-GB-x-gbcwmd": "en-gb-x-gbcwmd",
    "en-029": "en-029",
}
CHANNEL_NAMES = ("clean", "telephone", "gsm", "compressed", "farfield")
PRESET_NAMES = ("tiny", "default", "large")

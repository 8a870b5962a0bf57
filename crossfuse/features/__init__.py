"""Features: the content-hash keyed feature store and the extract stage that fills it."""

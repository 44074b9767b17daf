"""ResNeXt training framework: models, data, engine and tools."""

"""The data: archives downloaded and extracted, read through a dataset source, written to Lab WebDataset
shards, and read back by the training loader (plus the quantized ab bins of the data's colour space)."""

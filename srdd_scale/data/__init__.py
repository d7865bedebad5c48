"""Data: synthetic shapes, image/caption sources, preprocessing, MDS shards and the streaming loader."""

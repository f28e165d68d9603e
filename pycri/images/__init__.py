"""Images: references, registries, content store, unpack, image records."""

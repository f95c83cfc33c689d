"""Stage 1, the catalog: a folder or a product manifest in, a table of photos out.

Takes a catalog folder (or a manifest of products and their photos) and gives the catalog table
(image id, path, sha256, file facts, product and metadata) with per-file rejections.
`scan` walks and hashes, `product_manifest` reads CSV/Parquet manifests, `products` holds each
photo's product, metadata and filters, `images` decodes photos safely, `demo` draws the offline
demo catalog.
"""

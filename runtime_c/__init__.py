"""C kernel runtime sources and target support files, copied into generated bundles."""

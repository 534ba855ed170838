"""components/image_compressors"""

"""components/token_compressors"""

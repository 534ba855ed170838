"""components/decoders"""

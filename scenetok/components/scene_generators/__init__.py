"""components/scene_generators"""

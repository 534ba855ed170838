"""components/datasets"""

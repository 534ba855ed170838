"""components/samplers"""

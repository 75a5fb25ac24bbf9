"""Development helpers: keys, tokens, a sample upstream, the local stack, the demo.

Nothing in here is used when serving.
"""

"""vision: vision transformers and image-text models built from the gpt package.

Will teach how an image becomes a sequence of patch tokens and how a vision encoder feeds a language
model. Filled by a later issue.
"""

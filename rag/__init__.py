"""rag: retrieval-augmented generation: embeddings, vector search (checked against faiss), grounding.

Will teach how sentence embeddings turn search into nearest neighbours, and how retrieved passages
are put in front of a model. Filled by a later issue.
"""

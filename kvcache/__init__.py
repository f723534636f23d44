"""kvcache: KV-caching, paged attention and a continuous-batching inference engine (Weeks 3.2, 6.1, 6.3).

Will teach why decoding is memory-bound, how a paged block pool removes KV fragmentation, and how a
scheduler keeps a batch full. Filled by the kvcache issue.
"""

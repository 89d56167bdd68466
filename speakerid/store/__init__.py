"""The enrollment store: its SQLite file (``db``), enrolled speakers and their recordings'
embeddings (``speakers``), the search index kept beside it (``index``) and 1:N search
(``search``).
"""

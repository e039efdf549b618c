"""`python -m movie_embeddings_server.cli`: the `movie-embeddings` command."""

import sys

from . import main

sys.exit(main())

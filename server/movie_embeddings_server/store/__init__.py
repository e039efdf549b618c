"""On disk, shared by both processes: atomic version directories, models, datasets."""

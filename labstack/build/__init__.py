"""build: the matrix's images, reproducibly: lockfiles (lock, pipconf), the verified wheelhouse (wheelhouse),
the OS layer and shared base (base), the framework images (images) and their JupyterLab layer (notebook)."""

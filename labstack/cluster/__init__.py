"""Clusters: Slurm batch jobs on the same images (docker on the nodes; pyxis and apptainer on paper), and image
archives for clusters without Docker (invoke export)."""

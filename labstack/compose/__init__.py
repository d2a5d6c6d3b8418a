"""compose: the services a lab works in: `.env` (env), the compose projects and the notebook (project), and the
MNIST data the trainer reads (data)."""

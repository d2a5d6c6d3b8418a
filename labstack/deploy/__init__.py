"""`invoke deploy`: ship the images built here to lab servers by ID, over ssh, one host's failure its own."""

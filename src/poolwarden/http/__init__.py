"""HTTP/1.1 pieces shared by the front end (master) and the workers."""

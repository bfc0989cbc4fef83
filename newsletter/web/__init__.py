"""The web app: the public folder's static files, and the subscription pages."""

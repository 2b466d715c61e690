"""HTTP plumbing shared by the REST API (:mod:`modelhost.api`) and the web UI
(:mod:`modelhost.ui`): request dependencies, the JSON response, the error envelope, body
limits and project uploads. Neither side imports the other; both import this."""

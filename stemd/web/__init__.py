"""The web face of stemd: a FastAPI app served by uvicorn in a thread of the supervisor.

It reads the job database and the daemon's status file, and asks for changes
(submit, cancel, retry) through the same requests the CLI files.
"""

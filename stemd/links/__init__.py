"""Link drops: a link file in an inbox becomes one job per http(s) URL, whose audio is
downloaded with yt-dlp (the ``stemd[links]`` extra) in the worker as the job's first phase.

``parse`` reads link files, ``policy`` decides which URLs may be fetched, ``download``
fetches one (the only module that imports yt-dlp). See docs/links.md.
"""

"""A wheel folder for machines without internet: `make wheelhouse` on a connected machine, `make install
WHEELS=dir` on the offline one (pip with --no-index: it never reaches the network).

  lock.py      the folder's lock (pip's hashed requirements format) and its check
  build.py     `make wheelhouse`: resolve for a target Python, leave out what it has, download, lock
  install.py   `make install WHEELS=dir`: check, venv, pip --no-index, the install stamp
  __main__.py  the command line the Make targets call

Standard library only (and pip's vendored `packaging`): it runs before anything is installed.
"""

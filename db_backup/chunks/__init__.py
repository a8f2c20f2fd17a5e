"""The incremental chunk store: content-defined chunking, per-backup chunk indexes,
the writer that dedups chunks on upload, the reader, and the chunk garbage collector.
"""

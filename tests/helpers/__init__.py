"""What the tests use but are not tests: a fake iNaturalist API, a tiny classifier trained in
seconds, and the scripts test_training.py and test_distribute.py run as subprocesses. The tests
import them as ``helpers.<module>`` (pytest puts tests/ on sys.path)."""

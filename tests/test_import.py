import subprocess
import sys


def test_import_vasrch_loads_nothing_heavy() -> None:
    code = (
        "import sys, vasrch; heavy = [m for m in ('tensorflow', 'keras', 'prefect', 'sklearn', "
        "'pandas', 'matplotlib') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_seed_functions_resolve_lazily() -> None:
    import vasrch

    assert callable(vasrch.extract_features) and callable(vasrch.search_similar_images)
    assert set(vasrch.__all__) == {
        "extract_features",
        "get_optimal_num_clusters",
        "train_clusters",
        "search_similar_images",
    }

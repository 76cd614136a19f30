from exporter.entry import main

if __name__ == "__main__":  # guarded: helper processes started by spawn import this module too
    raise SystemExit(main())

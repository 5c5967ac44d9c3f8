from autotaper.cli import main

raise SystemExit(main())

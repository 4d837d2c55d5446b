from esteira.cli import main

raise SystemExit(main())

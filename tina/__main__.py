from tina.cli import main

raise SystemExit(main())

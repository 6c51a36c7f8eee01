from zodi_cli import main

raise SystemExit(main())

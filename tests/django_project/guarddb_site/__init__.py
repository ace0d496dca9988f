"""A minimal Django 5.2 project on the mysql backend, with guarddb installed as MySQLdb."""

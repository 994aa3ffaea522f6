from flask.testing import FlaskClient


def test_worked_example_secondary(client: FlaskClient) -> None:
    first = client.post(
        "/identify", json={"email": "lorraine@hillvalley.edu", "phoneNumber": "123456"}
    )
    assert first.status_code == 200
    second = client.post(
        "/identify", json={"email": "mcfly@hillvalley.edu", "phoneNumber": "123456"}
    )
    assert second.get_json() == {
        "contact": {
            "primaryContactId": 1,
            "emails": ["lorraine@hillvalley.edu", "mcfly@hillvalley.edu"],
            "phoneNumbers": ["123456"],
            "secondaryContactIds": [2],
        }
    }

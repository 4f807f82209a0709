from underlay.sdk.client import AsyncUnderlay


async def test_agent_gets_budget_and_identity(ul: AsyncUnderlay) -> None:
    fixer = await ul.agents.create("fixer", capabilities=["system.*"], budget="5.00 USD")
    agent = await ul.as_agent(fixer)
    me = await agent.self.whoami()
    assert me.id == fixer.id and me.did.startswith("did:key:z6Mk")
    bal = await agent.budget.balance()
    assert str(bal.available) == "5.00 USD"
